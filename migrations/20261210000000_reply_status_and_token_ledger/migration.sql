-- How a stored reply ended, and token accounting that cannot count a reply twice.
--
-- "status" of an assistant message (and a bot message of a group): NULL for a reply that
-- finished (every row written before this migration, and the Next.js app's own), 'stopped' when
-- the user stopped it (POST …/stop), 'interrupted' when it broke off (the model failed, the
-- function's time ran out, or its process died and the reply journal was drained). A nullable
-- column with no default: adding it rewrites nothing.
--
-- "ReplyTokens" records the tokens of each reply once, by the reply's message id: the write
-- that adds them to "Companion" and "UserBurnedTokens" inserts here in the same statement and
-- adds nothing when the id is already here, so a retry of a write that timed out but had
-- committed (or a drain of the journal after the writer had succeeded) never adds them twice.
-- No foreign key: a reply may be regenerated (its message deleted) after its tokens were spent.

ALTER TABLE "Message" ADD COLUMN IF NOT EXISTS "status" TEXT;

ALTER TABLE "GroupMessage" ADD COLUMN IF NOT EXISTS "status" TEXT;

CREATE TABLE IF NOT EXISTS "ReplyTokens" (
    "messageId" TEXT NOT NULL,
    "companionId" TEXT NOT NULL,
    "userId" TEXT NOT NULL,
    "tokens" INTEGER NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "ReplyTokens_pkey" PRIMARY KEY ("messageId")
);
