"""Data: caption processing, transforms, the procedural world, shard writing and readers."""
