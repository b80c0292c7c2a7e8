"""Reading input: files (CSV, Excel) as chunks of text cells, header resolution, shards."""
