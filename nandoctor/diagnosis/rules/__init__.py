"""One module per rule: its `RULE` and the fix text it writes for a finding."""
