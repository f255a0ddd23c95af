"""What the tests stand on: builders, known data sets and the pieces of the test stack, in one place.

Test modules (test_*.py) and conftest.py import from here, never from each other; support modules
never import a test module; bench/ imports nothing of analytics_platform_tests but this package
(unit/test_suite_layout.py checks all three). Where things live:

  stack.py         DatabaseHandle, new_database (a copy of migrated_template, the session's database
                   migrated once), new_settings, role_password; dagster_instance (a copy of
                   dagster_instance_template); domain_drain, domain_topic
                   (a domain's drain and topic as the sensor builds them) and produce (acknowledged);
                   the fixtures of ../conftest.py (database, settings, module_*) are made with these
  readings.py      messages of t1/f1/mc-01 (KEY, body, reading, lab; HEALTH, SWEEPS, LAB) and the two
                   pipeline steps: drain (one tick of the drain sensors) and materialize
  energy_hour.py   the energy hour 2025-08-20 03:00 of t1/f1/mc-01 (sensor_messages, STATES, ...) with
                   its KPIs worked out by hand
  dataset.py       the ingest tests' known messages (P0, P1, P2) with their expected rows and rejects;
                   produce_dataset
  ingest_model.py  the pure-Python model of ingest the property tests compare the stack with
  alerts.py        real alert receivers on 127.0.0.1 (HttpReceiver, MailReceiver), the alert tick at a
                   given clock (tick, NOW, UI, RULE, CHANNELS, POLICY) and insert_anomaly
  api.py           the /v1 API under test: Api, Caller, running, make_key, insert, ok, assert_422, pages,
                   split, the CSV checks, the error bodies (MISSING_KEY, OTHER_TENANT, ...), at, iso
  api_data.py      the /v1 tests' known rows (aggregates, events, KPIs, deviations, anomalies, baselines,
                   spec limits, readings) with their JSON items, insert_* for each, a valid request of
                   each listing (AGG, KPI, ...); the fixtures api, empty_api, agg_data, anomalies, ...
                   are in ../integration/conftest.py
  dashboard.py     the dashboard plant built through the real pipeline (fixture `plant`, EXPECTED)
  edge.py          edge-agent helpers: OwnBroker, AgentProcess, running_agent, mosquitto, read_topic,
                   wait_for, ... (bench/edge.py and bench/chaos.py use them too)
  sparkplug.py     Sparkplug B payloads built field by field (metric, payload, bd_seq) and EdgeNode, an
                   edge node of the tests' own on a real Mosquitto (will, births, seq, NCMDs received)
  helm.py          rendering the Helm chart without a helm binary
  tools.py         the Debian tools promtool and the compose client (fail with what to install), run
"""
