-- 32_baseline_cv_rmse.sql: a baseline's CV(RMSE), ASHRAE Guideline 14's acceptance figure for an energy
-- model: sqrt(SSR / (n - p)) / mean energy x 100, p the model's parameters (drivers + intercept). The fit
-- reported R², adjusted R², RMSE (sqrt(SSR / n)) and MAE, none of which a reviewer holding the guideline can
-- compare against its 30 % (hourly) limit. Models fitted before have none (NULL): refit to get it.
ALTER TABLE analytics.analytics_baseline ADD COLUMN IF NOT EXISTS cv_rmse_pct double precision;
COMMENT ON COLUMN analytics.analytics_baseline.cv_rmse_pct IS
    'ASHRAE Guideline 14 CV(RMSE) in percent: sqrt(SSR / (n - p)) / mean(target) x 100; NULL before sql/32';
