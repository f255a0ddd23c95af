-- 29_plant_versions.sql: emission factors and time-of-use tariffs that change over time. A grid factor is
-- revised (yearly, or a supplier change mid-day), a utility changes its tariff on the 1st of a month: with one
-- factor and one set of bands per tenant, re-materialising (or backfilling) last year applied today's factor
-- and prices to it. Now each is a version in force from its valid_from until the next version's
-- (the version in force at t: the latest valid_from <= t); re-computing a past period uses what was in force
-- then, and a period straddling a change books each part at its own version (transforms/energy_kpis.py).
--
-- A version in force since forever has valid_from '-infinity', not the epoch: it is exact (a backfill of any
-- date is after it), it is what the plant file's flat form means, and what the rows here before this migration
-- meant, so a database keeps its figures. Idempotent; PostgreSQL and TimescaleDB alike (plain tables).

-- Emission factors: one row per version.
CREATE TABLE IF NOT EXISTS analytics.plant_emission_factors (
    tenant_id   text             NOT NULL,
    valid_from  timestamptz      NOT NULL DEFAULT '-infinity',
    kg_per_kwh  double precision NOT NULL CHECK (kg_per_kwh >= 0),
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, valid_from)
);
COMMENT ON TABLE analytics.plant_emission_factors IS
    'Per tenant, its emission factor (kg CO2 per kWh) in force from valid_from (-infinity: since forever) until the next';
GRANT SELECT ON analytics.plant_emission_factors TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.plant_emission_factors TO analytics_rw;

-- The one factor a tenant had becomes its version since forever, and the column goes: left in place, a
-- factor written to it would be silently ignored, and a re-run of this file would copy it back over a
-- history that had since been loaded.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'analytics'
               AND table_name = 'plant_tenants' AND column_name = 'emission_factor_kg_per_kwh') THEN
        INSERT INTO analytics.plant_emission_factors (tenant_id, valid_from, kg_per_kwh)
        SELECT tenant_id, '-infinity', emission_factor_kg_per_kwh FROM analytics.plant_tenants
        WHERE emission_factor_kg_per_kwh IS NOT NULL
        ON CONFLICT (tenant_id, valid_from) DO NOTHING;
        ALTER TABLE analytics.plant_tenants DROP COLUMN emission_factor_kg_per_kwh;
    END IF;
END $$;

-- Tariffs: a version is all of a tenant's bands with one valid_from; the bands already there are the version
-- since forever. The key gains valid_from (two versions may both have a band 'peak' from 09:00).
ALTER TABLE analytics.plant_tariff_bands ADD COLUMN IF NOT EXISTS valid_from timestamptz NOT NULL DEFAULT '-infinity';
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = 'analytics.plant_tariff_bands'::regclass AND i.indisprimary AND a.attname = 'valid_from'
    ) THEN
        ALTER TABLE analytics.plant_tariff_bands DROP CONSTRAINT IF EXISTS plant_tariff_bands_pkey;
        ALTER TABLE analytics.plant_tariff_bands ADD PRIMARY KEY (tenant_id, valid_from, band, start_minute);
    END IF;
END $$;
