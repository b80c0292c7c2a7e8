"""State that outlives a run: the job's journal, job records, the sync state store."""
