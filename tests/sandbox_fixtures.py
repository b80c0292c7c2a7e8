"""Sandbox fixtures for any test module (imported by conftest.py).

Override `sandbox_settings` in a module, or parametrize it indirectly, to change the org.
"""

from __future__ import annotations

import pytest

from batch_updater.sandbox import Sandbox, SandboxSettings, SandboxThread


@pytest.fixture
def sandbox_settings() -> SandboxSettings:
    return SandboxSettings(customers=1_000)


@pytest.fixture
async def sandbox(sandbox_settings: SandboxSettings):
    """A sandbox in the test's event loop: sandbox.url, sandbox.state."""
    async with Sandbox(sandbox_settings) as running:
        yield running


@pytest.fixture
def sandbox_thread(sandbox_settings: SandboxSettings):
    """A sandbox in a background thread, for synchronous tests (CliRunner, subprocesses)."""
    with SandboxThread(sandbox_settings) as running:
        yield running
