-- The dashboard read model (the seed's "New Performance Optimization Plan").
--
-- A narrow materialized view of public companions with their message counts, holding only the
-- columns the dashboard shows, so an anonymous page never touches the wide "Companion" rows
-- (instructions, JSONB configs) nor counts "Message" per request. Its unique index lets it
-- refresh CONCURRENTLY (readers are never blocked); the cron route calls
-- gcbb_refresh_dashboard(), which records every refresh in "DashboardRefreshLog".
--
-- Every statement here creates a new object or indexes one created in this file, except the
-- partial and trigram indexes on "Companion": those are built while the table is locked
-- against writes, which is acceptable for this table's size on a low-traffic deploy.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The platform's own user id is a deployment setting (SYSTEM_USER_ID), not a constant: the
-- refresh function passes it in, and the view reads it from a transaction-local setting.
CREATE OR REPLACE FUNCTION gcbb_system_user_id() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT COALESCE(NULLIF(current_setting('gcbb.system_user_id', true), ''), 'system') $$;

-- CreateMaterializedView
CREATE MATERIALIZED VIEW IF NOT EXISTS "CompanionDashboard" AS
SELECT c."id",
       c."name",
       c."src",
       c."userName",
       c."categoryId",
       c."isFree",
       c."createdAt",
       c."userId",
       (c."userId" = gcbb_system_user_id()) AS "isSystem",
       COALESCE(m."messageCount", 0)::integer AS "messageCount"
FROM "Companion" c
LEFT JOIN (
    SELECT "companionId", count(*) AS "messageCount"
    FROM "Message"
    GROUP BY "companionId"
) m ON m."companionId" = c."id"
WHERE NOT c."private";

-- gcbb:allow create-index-not-concurrently the view was created just above
CREATE UNIQUE INDEX IF NOT EXISTS "CompanionDashboard_id_key" ON "CompanionDashboard"("id");
-- gcbb:allow create-index-not-concurrently the view was created just above
CREATE INDEX IF NOT EXISTS "CompanionDashboard_isSystem_createdAt_id_idx"
    ON "CompanionDashboard"("isSystem" DESC, "createdAt" DESC, "id");
-- gcbb:allow create-index-not-concurrently the view was created just above
CREATE INDEX IF NOT EXISTS "CompanionDashboard_categoryId_isSystem_createdAt_id_idx"
    ON "CompanionDashboard"("categoryId", "isSystem" DESC, "createdAt" DESC, "id");
-- gcbb:allow create-index-not-concurrently the view was created just above
CREATE INDEX IF NOT EXISTS "CompanionDashboard_name_trgm_idx"
    ON "CompanionDashboard" USING gin ("name" gin_trgm_ops);

-- Per-category counts of public companions: the count fallback when an exact count is slow.
-- The row with "categoryId" = '' counts every category.
CREATE MATERIALIZED VIEW IF NOT EXISTS "CompanionCategoryCount" AS
SELECT COALESCE("categoryId", '') AS "categoryId", count(*)::integer AS "companionCount"
FROM "CompanionDashboard"
GROUP BY GROUPING SETS (("categoryId"), ());

-- gcbb:allow create-index-not-concurrently the view was created just above
CREATE UNIQUE INDEX IF NOT EXISTS "CompanionCategoryCount_categoryId_key"
    ON "CompanionCategoryCount"("categoryId");

-- Partial indexes for the anonymous query on the base table (signed-in pages, and the fallback
-- when the read model is unavailable): public companions only, newest first.
-- gcbb:allow create-index-not-concurrently small table, deployed at low traffic (see header)
CREATE INDEX IF NOT EXISTS "Companion_public_createdAt_idx"
    ON "Companion"("createdAt" DESC, "id") WHERE NOT "private";
-- gcbb:allow create-index-not-concurrently small table, deployed at low traffic (see header)
CREATE INDEX IF NOT EXISTS "Companion_public_categoryId_createdAt_idx"
    ON "Companion"("categoryId", "createdAt" DESC, "id") WHERE NOT "private";
-- The public+system pattern: platform-owned public companions, shown first.
-- gcbb:allow create-index-not-concurrently small table, deployed at low traffic (see header)
CREATE INDEX IF NOT EXISTS "Companion_public_userId_createdAt_idx"
    ON "Companion"("userId", "createdAt" DESC) WHERE NOT "private";
-- A signed-in viewer's own companions, public or private.
-- gcbb:allow create-index-not-concurrently small table, deployed at low traffic (see header)
CREATE INDEX IF NOT EXISTS "Companion_userId_createdAt_idx"
    ON "Companion"("userId", "createdAt" DESC);
-- Case-insensitive name search (ILIKE '%q%') on the base table.
-- gcbb:allow create-index-not-concurrently small table, deployed at low traffic (see header)
CREATE INDEX IF NOT EXISTS "Companion_name_trgm_idx"
    ON "Companion" USING gin ("name" gin_trgm_ops);

-- The exact number of public companions matching the dashboard's filters, as of the last
-- refresh; p_name_contains is an ILIKE fragment the caller has already escaped. A function so
-- that the one query allowed to be slow has one name: callers run it under a short
-- statement_timeout and fall back to "CompanionCategoryCount" when it is slow.
CREATE OR REPLACE FUNCTION gcbb_count_dashboard(p_category_id text, p_name_contains text)
    RETURNS bigint
    LANGUAGE sql STABLE
    AS $$
SELECT count(*)
FROM "CompanionDashboard"
WHERE (p_category_id IS NULL OR "categoryId" = p_category_id)
  AND (p_name_contains IS NULL OR "name" ILIKE '%' || p_name_contains || '%')
$$;

-- CreateTable
CREATE TABLE IF NOT EXISTS "DashboardRefreshLog" (
    "id" BIGSERIAL NOT NULL,
    "startedAt" TIMESTAMPTZ(3) NOT NULL,
    "finishedAt" TIMESTAMPTZ(3) NOT NULL,
    "durationMs" DOUBLE PRECISION NOT NULL,
    "systemUserId" TEXT NOT NULL,
    CONSTRAINT "DashboardRefreshLog_pkey" PRIMARY KEY ("id")
);

-- Refreshes the read model without blocking readers and records when and how long.
CREATE OR REPLACE FUNCTION gcbb_refresh_dashboard(p_system_user_id text DEFAULT 'system')
    RETURNS TABLE ("startedAt" timestamptz, "durationMs" double precision)
    LANGUAGE plpgsql
    AS $$
DECLARE
    started timestamptz := clock_timestamp();
    took double precision;
BEGIN
    PERFORM set_config('gcbb.system_user_id', p_system_user_id, true);
    REFRESH MATERIALIZED VIEW CONCURRENTLY "CompanionDashboard";
    REFRESH MATERIALIZED VIEW CONCURRENTLY "CompanionCategoryCount";
    took := extract(epoch FROM clock_timestamp() - started) * 1000;
    INSERT INTO "DashboardRefreshLog" ("startedAt", "finishedAt", "durationMs", "systemUserId")
    VALUES (started, clock_timestamp(), took, p_system_user_id);
    RETURN QUERY SELECT started, took;
END
$$;
