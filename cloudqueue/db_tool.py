"""``cloudqueue db migrate|status --store URL``: the PostgreSQL store's tables, from a shell.

``migrate`` creates the queue's tables in an empty database, or brings them from an earlier
version to this one (``engine/runtime/postgres/schema.py``); ``serve --store`` does the same at
start, so running it alone is for a deployment that migrates before it starts nodes.
``status`` says the tables' version, the nodes alive, and which node dispatches each app.
"""

from __future__ import annotations

import sys

from cloudqueue.engine.runtime.postgres import schema
from cloudqueue.engine.runtime.postgres.database import connect, refusal, shown_url

STATUS_SQL = """
SELECT l.app_id, l.owner, l.epoch, l.expires_at < now() AS expired, n.url
  FROM cq_leases l LEFT JOIN cq_nodes n ON n.node_id = l.owner
 ORDER BY l.app_id
"""
NODES_SQL = """
SELECT node_id, url, apps, round(extract(epoch FROM now() - heartbeat_at) * 1000) AS age_ms
  FROM cq_nodes ORDER BY started_at
"""


async def run(action: str, url: str) -> int:
    try:
        pool = await connect(url, max_size=1, application_name="cloudqueue db")
    except Exception as exc:
        print(f"cloudqueue db: {refusal(url, exc)}", file=sys.stderr)
        return 1
    try:
        async with pool.acquire() as conn:
            if action == "migrate":
                before, after = await schema.migrate(conn)
                if before == after:
                    print(f"{shown_url(url)}: the queue's tables are at version {after}, this "
                          "cloudqueue's; nothing to do")
                else:
                    print(f"{shown_url(url)}: the queue's tables migrated from version {before} "
                          f"to {after}")
                return 0
            version = await schema.version_of(conn)
            print(f"{shown_url(url)}: tables at version {version} (this cloudqueue: "
                  f"{schema.LATEST})")
            if version == 0:
                print("no queue tables yet: `cloudqueue db migrate --store URL` creates them")
                return 0
            for row in await conn.fetch(NODES_SQL):
                alive = "alive" if row["age_ms"] < 10_000 else f"silent {row['age_ms']} ms"
                print(f"node {row['node_id']} {row['url'] or '-'} ({alive}) serves "
                      f"{', '.join(row['apps']) or 'nothing'}")
            for row in await conn.fetch(STATUS_SQL):
                who = ("nobody" if row["owner"] is None or row["expired"] else
                       f"node {row['owner']} {row['url'] or ''}".rstrip())
                print(f"app {row['app_id']}: dispatched by {who} (epoch {row['epoch']})")
            return 0
    except schema.SchemaError as exc:
        print(f"cloudqueue db: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"cloudqueue db: {refusal(url, exc)}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
