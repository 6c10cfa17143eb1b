"""mmunlearn engine: benchmark data, model adapters, runner, judge, results, leaderboard, CLI."""
