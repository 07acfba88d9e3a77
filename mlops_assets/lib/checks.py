"""Names of the landing feeds' validation checks (constants only: the code location imports this
at load time, so no pandas here)."""

CHECK_NAMES = ("schema", "row_count", "partition_dates", "keys_unique", "value_ranges", "reference_codes")
FEED_CHECKS = {
    "schedules": CHECK_NAMES + ("no_leakage_columns",),
    "weather": CHECK_NAMES,
    "outcomes": CHECK_NAMES + ("labels_present", "matches_schedule"),
}
