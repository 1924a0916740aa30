"""The operator's tools: status, the status page and metrics, notifications, retention, retry,
the set-up check."""
