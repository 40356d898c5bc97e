"""``accounts import`` on PostgreSQL, code A against code B on the same machine state:
``python -m bench.import_ab N [TREE ...]``.

One dev Vault and one local PostgreSQL; N generated accounts (one caller number each,
``service/devtools/accounts_file.py``); each TREE (a directory holding a ``service``
package, e.g. ``git archive`` of an older commit; ``.`` is this checkout) imports the file
into a fresh database, the trees taking turns ``ROUNDS`` times (A B A B: the drift of this
shared machine falls on both). Prints, per run, accounts/s, the importer's CPU per account
and its peak RSS; then each tree's median. With ``IMPORT_AB_PROFILE=FILE``, one more run of
the last tree (not counted) runs under ``py-spy record --format raw`` (collapsed stacks into FILE).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from bench.scale import HERE, Imported, log, run_import
from service.devtools import accounts_file
from service.devtools.devstack import DevVault
from service.devtools.postgres import LocalPostgres
from service.settings import Settings
from service.store.migrations import migrate_store
from service.vault.bootstrap import bootstrap, issue_credentials
from service.vault.client import VaultClient

ROUNDS = int(os.environ.get("IMPORT_AB_ROUNDS", "2"))


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100_000
    trees = [Path(t).resolve() for t in (argv[1:] or ["."])]
    work = HERE / ".work" / "import_ab"
    shutil.rmtree(work, ignore_errors=True)  # a previous run's databases and Vault
    work.mkdir(parents=True)
    data = accounts_file.write(work / "accounts.csv", n)
    results: dict[Path, list[Imported]] = {t: [] for t in trees}
    with ExitStack() as exits:
        vault = DevVault.start(work / "vault")
        exits.callback(vault.stop)
        admin = VaultClient(vault.addr, vault.root_token, timeout=10)
        bootstrap(admin)
        creds = issue_credentials(admin, ["ivr-backend"])["ivr-backend"]
        creds.write(work / "ivr-backend")
        postgres = LocalPostgres(work / "pg")
        exits.callback(postgres.stop)
        postgres.start()
        profile = os.environ.get("IMPORT_AB_PROFILE")
        for round_ in range(ROUNDS + bool(profile)):
            for tree in trees if round_ < ROUNDS else trees[-1:]:
                url = postgres.new_database(f"ab{round_}_{trees.index(tree)}")
                migrate_store(Settings.from_environ({"STORE_URL": url}).store)
                env = {
                    "PATH": os.environ.get("PATH", ""),
                    "VAULT_ADDR": vault.addr,
                    "VAULT_ROLE_ID_FILE": str(work / "ivr-backend" / "role_id"),
                    "VAULT_SECRET_ID_FILE": str(work / "ivr-backend" / "secret_id"),
                    "BACKEND_TOKEN_FILE": str(work / "backend-token"),
                    "HOME": str(work),
                    "STORE_URL": url,
                    "PYTHONPATH": str(tree),
                }
                (work / "backend-token").write_text("x" * 32)
                if round_ == ROUNDS:  # profiled, not counted
                    spy = Path(sys.executable).with_name("py-spy")
                    run_import(
                        env,
                        data,
                        work,
                        prefix=[
                            str(spy),
                            "record",
                            "-r",
                            "200",
                            "--format",
                            "raw",
                            "-o",
                            str(profile),
                            "--",
                        ],
                    )
                    continue
                done = run_import(env, data, work)
                results[tree].append(done)
                log(
                    f"{tree}: {done.added / done.seconds:,.0f} accounts/s, CPU "
                    f"{done.cpu_s * 1000 / done.added:.3f} ms/account, RSS {done.rss_mb:.0f} MB, "
                    f"load {os.getloadavg()[0]:.1f}"
                )
    for tree, runs in results.items():
        rate = statistics.median(r.added / r.seconds for r in runs)
        cpu = statistics.median(r.cpu_s * 1000 / r.added for r in runs)
        print(
            f"{tree}: {n} accounts, median {rate:,.0f} accounts/s, CPU {cpu:.3f}"
            f" ms/account, peak RSS {max(r.rss_mb for r in runs):.0f} MB ({len(runs)} runs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
