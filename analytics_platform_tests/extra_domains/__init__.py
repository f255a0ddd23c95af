"""Domains that live outside the platform's package, registered by configuration only
(`DOMAIN_MODULES=analytics_platform_tests.extra_domains.energy_meter`): the proof that a domain is
one module plus configuration (docs/configuration.md, "Adding a domain")."""
