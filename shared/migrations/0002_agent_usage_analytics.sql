-- Agent usage per UTC day: one row per date and agent, grown by one additive upsert at the end of
-- each request (shared/analytics/writer.py). Rows older than ANALYTICS_DAILY_RETENTION_DAYS are
-- rolled up into agent_usage_analytics_monthly by whole months.
CREATE TABLE agent_usage_analytics (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    date date NOT NULL,
    agent_id text NOT NULL,
    invocation_count bigint NOT NULL,
    success_count bigint NOT NULL,
    error_count bigint NOT NULL,
    total_input_tokens bigint NOT NULL,
    total_output_tokens bigint NOT NULL,
    total_latency_ms bigint NOT NULL,
    min_latency_ms integer NOT NULL,
    max_latency_ms integer NOT NULL,
    -- US dollars from MODEL_PRICES at the time of each write; models without a price add 0 and are
    -- listed in unpriced_models.
    estimated_cost_usd numeric(20, 10) NOT NULL DEFAULT 0,
    -- Invocation counts per latency bucket. The 15 upper bounds in ms are LATENCY_BUCKET_BOUNDS_MS
    -- in shared/analytics/histogram.py: 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
    -- 60000, 120000, 300000, and no bound for the last bucket.
    latency_histogram bigint[] NOT NULL,
    unpriced_models text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- The unique index also serves queries by date range.
    CONSTRAINT agent_usage_analytics_date_agent_key UNIQUE (date, agent_id),
    CONSTRAINT agent_usage_analytics_counts_check
        CHECK (invocation_count > 0 AND success_count >= 0 AND error_count >= 0
               AND success_count + error_count = invocation_count),
    CONSTRAINT agent_usage_analytics_histogram_check CHECK (cardinality(latency_histogram) = 15)
);

CREATE INDEX agent_usage_analytics_agent_date_idx ON agent_usage_analytics (agent_id, date);
