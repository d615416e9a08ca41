-- The purge outbox: what hiding a companion still owes outside the database.
--
-- The privacy trigger (20261128000000_privacy_epoch) now also records, in the same transaction,
-- which companion was hidden (made private, or deleted) and under which epoch, whoever wrote
-- it: these functions' PATCH, the Next.js app, or psql. So nothing about a privacy change is
-- lost between the commit and the work it owes:
--
-- * the CDN purge of the companion's cache tag: the cron (and any instance that sees the epoch
--   move) claims pending rows with FOR UPDATE SKIP LOCKED, purges their tags, and marks them
--   purged in the same transaction; a purge that fails leaves them pending for the next drain,
--   and two drainers never take the same row;
-- * the dashboard total: the read model still lists a companion hidden since its last
--   refresh (pages drop it by joining "Companion"), so gcbb_count_dashboard subtracts the
--   companions of this table that the read model lists and that are not public now.
--
-- Rows are pruned by the cron once purged and older than the read model's last refresh.
-- Every statement creates a new object or replaces a function in place: nothing rewrites or
-- scans an existing table.

CREATE TABLE IF NOT EXISTS "PrivacyPurgeOutbox" (
    "id" BIGSERIAL NOT NULL,
    "companionId" TEXT NOT NULL,
    "epoch" BIGINT NOT NULL,
    "hiddenAt" TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    "purgedAt" TIMESTAMP(3),
    CONSTRAINT "PrivacyPurgeOutbox_pkey" PRIMARY KEY ("id")
);

-- gcbb:allow create-index-not-concurrently the table is created just above, empty
CREATE INDEX IF NOT EXISTS "PrivacyPurgeOutbox_pending_idx"
    ON "PrivacyPurgeOutbox" ("id") WHERE "purgedAt" IS NULL;
-- gcbb:allow create-index-not-concurrently the table is created just above, empty
CREATE INDEX IF NOT EXISTS "PrivacyPurgeOutbox_companionId_idx"
    ON "PrivacyPurgeOutbox" ("companionId");

CREATE OR REPLACE FUNCTION gcbb_bump_privacy_epoch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    bumped bigint;
BEGIN
    UPDATE "PrivacyEpoch"
    SET "epoch" = "epoch" + 1, "updatedAt" = (now() AT TIME ZONE 'UTC')
    WHERE "id" = 1
    RETURNING "epoch" INTO bumped;
    INSERT INTO "PrivacyPurgeOutbox" ("companionId", "epoch")
    VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD."id" ELSE NEW."id" END, COALESCE(bumped, 0));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION gcbb_count_dashboard(p_category_id text, p_name_contains text)
    RETURNS bigint
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    counted bigint;
    hidden bigint;
BEGIN
    IF p_name_contains IS NULL THEN
        IF p_category_id IS NULL THEN
            SELECT count(*) INTO counted FROM "CompanionDashboard";
        ELSE
            SELECT count(*) INTO counted FROM "CompanionDashboard" WHERE "categoryId" = p_category_id;
        END IF;
    ELSIF p_category_id IS NULL THEN
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE "name" ILIKE ''%'' || $1 || ''%'''
            INTO counted USING p_name_contains;
    ELSE
        EXECUTE 'SELECT count(*) FROM "CompanionDashboard" WHERE "categoryId" = $1 AND "name" ILIKE ''%'' || $2 || ''%'''
            INTO counted USING p_category_id, p_name_contains;
    END IF;
    -- Hidden since the read model's refresh: it still lists them, the pages don't.
    SELECT count(*) INTO hidden
    FROM "CompanionDashboard" d
    WHERE d."id" IN (SELECT o."companionId" FROM "PrivacyPurgeOutbox" o)
      AND NOT EXISTS (SELECT 1 FROM "Companion" c WHERE c."id" = d."id" AND NOT c."private")
      AND (p_category_id IS NULL OR d."categoryId" = p_category_id)
      AND (p_name_contains IS NULL OR d."name" ILIKE '%' || p_name_contains || '%');
    RETURN counted - hidden;
END
$$;
