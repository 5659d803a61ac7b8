"""Data: caption processing, transforms, shard writing and dataset readers (the procedural world: sseg.world)."""
