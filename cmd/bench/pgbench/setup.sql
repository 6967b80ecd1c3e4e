-- Tables of the one-write-per-commit ceiling (run once per bench database).
-- bench_insert has the shape of a queue row's cheapest possible insert: a bigint identity
-- primary key and a small payload; bench_update is 10,000 rows updated at random.
CREATE TABLE bench_insert (
    id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    v  integer     NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bench_update (
    id integer PRIMARY KEY,
    v  bigint  NOT NULL DEFAULT 0
);
INSERT INTO bench_update (id) SELECT generate_series(1, 10000);
ANALYZE bench_update;
