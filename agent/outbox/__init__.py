"""The outbox flow: list pages → fetch → write → index."""
