"""``python -m services.llmsim``: the simulator as a process, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import logging

import uvicorn

from services.llmsim.app import build_app
from services.llmsim.model import SimSettings
from shared.lifecycle import Service
from shared.lifecycle import main as run_service


class LlmSim(Service):
    name = "llmsim"

    def __init__(self, settings: SimSettings) -> None:
        super().__init__(grace_s=1.0)
        self.settings = settings

    async def start(self) -> None:
        config = uvicorn.Config(
            build_app(self.settings), host=self.settings.host, port=self.settings.port,
            log_level="warning", access_log=False, backlog=4096, timeout_keep_alive=30,
        )  # fmt: skip
        self.serve_http(config)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s llmsim %(message)s")
    run_service(lambda: LlmSim(SimSettings.from_env()))


if __name__ == "__main__":
    main()
