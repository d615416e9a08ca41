-- The privacy epoch: a counter that goes up, in the same transaction, whenever a companion is
-- hidden (made private, or deleted), whichever application does it: the triggers below fire
-- for these functions' PATCH and for the Next.js app's own writes alike.
--
-- Caches key what they hold by the epoch they read before building it, so nothing cached while
-- a companion was visible can be served once it is hidden: after the bump every cache key is
-- new, in Redis, in every instance's memory, and in the cron's snapshots. Readers confirm the
-- epoch from here at most a few hundred milliseconds old, and the PATCH that hides a companion
-- answers only after that window has passed.
--
-- Every statement creates a new object or attaches a trigger; nothing rewrites or scans a table.

CREATE TABLE IF NOT EXISTS "PrivacyEpoch" (
    "id" INTEGER NOT NULL DEFAULT 1,
    "epoch" BIGINT NOT NULL DEFAULT 0,
    "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "PrivacyEpoch_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "PrivacyEpoch_one_row" CHECK ("id" = 1)
);

INSERT INTO "PrivacyEpoch" ("id") VALUES (1) ON CONFLICT ("id") DO NOTHING;

CREATE OR REPLACE FUNCTION gcbb_bump_privacy_epoch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE "PrivacyEpoch"
    SET "epoch" = "epoch" + 1, "updatedAt" = (now() AT TIME ZONE 'UTC')
    WHERE "id" = 1;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS "Companion_hidden_bumps_privacy_epoch" ON "Companion";
CREATE TRIGGER "Companion_hidden_bumps_privacy_epoch"
    AFTER UPDATE OF "private" ON "Companion"
    FOR EACH ROW
    WHEN (NEW."private" AND NOT OLD."private")
    EXECUTE FUNCTION gcbb_bump_privacy_epoch();

DROP TRIGGER IF EXISTS "Companion_deleted_bumps_privacy_epoch" ON "Companion";
CREATE TRIGGER "Companion_deleted_bumps_privacy_epoch"
    AFTER DELETE ON "Companion"
    FOR EACH ROW
    EXECUTE FUNCTION gcbb_bump_privacy_epoch();
