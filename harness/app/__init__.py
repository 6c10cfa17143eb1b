"""The application: the runner, leaderboard, check, the CLI and its commands, on top of the core and the plugins."""
