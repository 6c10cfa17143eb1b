"""The embedded demo: the mini-bench generator and the tiny model (built, trained and scored with the task plugins), with their committed assets."""
