-- Agent usage per UTC calendar month, for days past ANALYTICS_DAILY_RETENTION_DAYS. A month is
-- either here or in agent_usage_analytics, never split: the nightly rollup moves whole months.
-- Same figures as the daily table; month is the first day of the month.
CREATE TABLE agent_usage_analytics_monthly (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    month date NOT NULL,
    agent_id text NOT NULL,
    invocation_count bigint NOT NULL,
    success_count bigint NOT NULL,
    error_count bigint NOT NULL,
    total_input_tokens bigint NOT NULL,
    total_output_tokens bigint NOT NULL,
    total_latency_ms bigint NOT NULL,
    min_latency_ms integer NOT NULL,
    max_latency_ms integer NOT NULL,
    estimated_cost_usd numeric(20, 10) NOT NULL DEFAULT 0,
    latency_histogram bigint[] NOT NULL,
    unpriced_models text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_usage_analytics_monthly_month_agent_key UNIQUE (month, agent_id),
    CONSTRAINT agent_usage_analytics_monthly_month_check CHECK (extract(day FROM month) = 1),
    CONSTRAINT agent_usage_analytics_monthly_counts_check
        CHECK (invocation_count > 0 AND success_count >= 0 AND error_count >= 0
               AND success_count + error_count = invocation_count),
    CONSTRAINT agent_usage_analytics_monthly_histogram_check CHECK (cardinality(latency_histogram) = 15)
);

CREATE INDEX agent_usage_analytics_monthly_agent_month_idx ON agent_usage_analytics_monthly (agent_id, month);
