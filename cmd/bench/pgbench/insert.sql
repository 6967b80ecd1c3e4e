-- One single-row INSERT per transaction (pgbench autocommit).
\set v random(1, 1000000)
INSERT INTO bench_insert (v) VALUES (:v);
