-- One single-row UPDATE per transaction (pgbench autocommit).
\set id random(1, 10000)
UPDATE bench_update SET v = v + 1 WHERE id = :id;
