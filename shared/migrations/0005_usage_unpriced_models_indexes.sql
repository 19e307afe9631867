-- Rows with unpriced models are rare, so the summary's list of unpriced models reads them through
-- these small partial indexes instead of scanning every row of the range.
CREATE INDEX agent_usage_analytics_unpriced_idx ON agent_usage_analytics (date)
    WHERE unpriced_models <> '{}';
CREATE INDEX agent_usage_analytics_monthly_unpriced_idx ON agent_usage_analytics_monthly (month)
    WHERE unpriced_models <> '{}';
