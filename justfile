# restock's commands. Every recipe passes extra arguments through (`just test subscribe`).

set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := justfile_directory() + "/target/tools/node_modules/.bin:" + env_var('PATH')

# List the recipes.
default:
    @just --list

# Bring up private Postgres and Redis (unless DATABASE_URL and REDIS_URL are set), migrate, serve
# with the development credential of config/dev.toml (unless RESTOCK_CONFIG or --config names another).
run *flags:
    scripts/services.sh up
    source target/services/env && RESTOCK_CONFIG="${RESTOCK_CONFIG:-config/dev.toml}" cargo run --quiet --bin restock -- serve {{flags}}

# Drive the server `just run` started through a simulated program (thousands of shoppers, four
# restocks, a holdout, deliveries, clicks, STOP replies, purchases) and print its reports
# (`just demo --seed 42 --shoppers 500`).
demo *flags:
    cargo run --quiet --bin demo -- {{flags}}

# Run the whole test suite against real Postgres and Redis.
test *flags:
    scripts/services.sh up
    scripts/tools.sh
    source target/services/env && cargo test --workspace {{flags}}

# buf lint on the public API, rustfmt, clippy with warnings as errors.
lint:
    scripts/tools.sh
    buf lint
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Apply pending migrations to the configured (or private) database.
migrate:
    scripts/services.sh up
    source target/services/env && cargo run --quiet --bin restock -- migrate

# Stop the private Postgres and Redis.
down:
    scripts/services.sh down

# Measure throughput as ratios against this machine's raw Postgres/Redis limits (target/bench/).
bench *flags:
    scripts/services.sh up
    source target/services/env && cargo run --release --quiet -p restock-bench -- {{flags}}

# A 1,000,000-subscriber restock against the 100,000 one, and the server's peak memory (not in
# `just bench`: it takes several minutes; RESTOCK_BENCH_LARGE=<n> for another size).
bench-large:
    scripts/services.sh up
    source target/services/env && time cargo run --release --quiet -p restock-bench -- large
