-- Exact per-agent totals of closed months whose daily rows are still kept, so the usage summary
-- reads one row per agent for each whole month in its range instead of every daily row. The
-- nightly job (shared/analytics/rollup.py) closes a month once it has ended, and deletes the
-- month's totals when it rolls the month up into agent_usage_analytics_monthly.

-- A month listed here has a row in agent_usage_analytics_month_totals for every agent with daily
-- rows in that month, and those rows equal the sums of the daily rows.
CREATE TABLE agent_usage_analytics_closed_months (
    month date PRIMARY KEY,
    closed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_usage_analytics_closed_months_month_check CHECK (extract(day FROM month) = 1)
);

-- Same figures as agent_usage_analytics_monthly; month is the first day of the month.
CREATE TABLE agent_usage_analytics_month_totals (
    month date NOT NULL REFERENCES agent_usage_analytics_closed_months (month) ON DELETE CASCADE,
    agent_id text NOT NULL,
    invocation_count bigint NOT NULL,
    success_count bigint NOT NULL,
    error_count bigint NOT NULL,
    total_input_tokens bigint NOT NULL,
    total_output_tokens bigint NOT NULL,
    total_latency_ms bigint NOT NULL,
    min_latency_ms integer NOT NULL,
    max_latency_ms integer NOT NULL,
    estimated_cost_usd numeric(20, 10) NOT NULL,
    latency_histogram bigint[] NOT NULL,
    unpriced_models text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (month, agent_id),
    CONSTRAINT agent_usage_analytics_month_totals_histogram_check CHECK (cardinality(latency_histogram) = 15)
);

-- A write dated in a closed month (a run that started before midnight UTC and ended after the
-- month was closed) reopens that month: its totals are deleted and the summary reads its daily
-- rows again until the next nightly run closes it anew. The trigger is deferred to commit, so a
-- writer takes the closed month's row lock only after all its daily row locks, and writers
-- that share rows cannot deadlock on it. A write to a month that is not closed deletes nothing
-- and locks nothing.
CREATE FUNCTION reopen_agent_usage_month() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM agent_usage_analytics_closed_months WHERE month = date_trunc('month', NEW.date::timestamp)::date;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER agent_usage_analytics_reopen_month
    AFTER INSERT OR UPDATE ON agent_usage_analytics
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION reopen_agent_usage_month();
