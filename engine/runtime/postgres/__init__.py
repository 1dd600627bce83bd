"""The PostgreSQL store: several ``cloudqueue serve`` nodes sharing one database.

``schema``: the tables, created and migrated in numbered steps. ``database``: the URL, the
connection pool and what a database error means for the queue. ``store``: ``PgStore``, the
``Store`` of one app, its facts written in fenced, group-committed batches. ``leases``: which
node dispatches which app (a lease row with a fencing epoch). ``node``: a node's membership
loop, taking and handing over apps. ``local``: a throwaway cluster for tests and benchmarks.
"""
