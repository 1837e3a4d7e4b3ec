"""The shared base: errors, time formats, file-system helpers, fingerprints. Imports nothing else of the agent."""
