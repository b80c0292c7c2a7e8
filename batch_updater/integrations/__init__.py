"""Integrations with schedulers: the Airflow operator."""
