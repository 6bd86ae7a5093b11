"""Sub-commands of the ``trim-pomdp`` CLI (one module each)."""
