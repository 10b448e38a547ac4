"""`make dev-reset`: throws the development database away, so the next `make dev` starts
from an empty cluster and applies every migration afresh — the way out after editing a
migration that was already applied. The dev JWT secret is kept, so tokens stay valid.

Refuses while `make dev` runs on the directory; a Postgres of ours left running by an
earlier run is stopped first.
"""

from __future__ import annotations

import shutil
import sys

from devtools.dev import data_dir, data_dir_in_use, dev_cluster


def main() -> int:
    directory = data_dir()
    if data_dir_in_use(directory):
        print(
            f"make dev-reset: `make dev` is running on {directory}; stop it first",
            file=sys.stderr,
        )
        return 1
    cluster = dev_cluster(directory)
    if not cluster.directory.exists():
        print(f"nothing to reset: {cluster.directory} does not exist")
        return 0
    if cluster.running_pid() is not None:
        cluster.stop()
    shutil.rmtree(cluster.directory)
    print(f"removed {cluster.directory}; the next `make dev` migrates a fresh database")
    return 0


if __name__ == "__main__":
    sys.exit(main())
