"""Leave detached actors with the given names on a Ray cluster, as a dead service or a learner
on a dead node can: ``python leftover_actors.py ADDRESS NAME...`` (in the cluster's token env).

Run as a driver process of its own, so the test process never joins the cluster."""

from __future__ import annotations

import sys

import ray


@ray.remote(num_cpus=0)
class Leftover:
    def ping(self) -> bool:
        return True


def main(address: str, names: list[str]) -> None:
    ray.init(address=address, namespace="star", logging_level="ERROR")
    actors = [Leftover.options(name=name, lifetime="detached").remote() for name in names]
    ray.get([actor.ping.remote() for actor in actors])  # they exist once this returns


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
