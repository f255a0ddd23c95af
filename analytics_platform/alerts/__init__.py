"""Alert rules, their conditions and notifications (see docs/alerts.md)."""
