#!/bin/sh
# Runs once, when the PostgreSQL volume is new: a database and a role each for Synapse and the
# bot. Synapse needs the C collation. The Synapse role's password must match
# contrib/synapse/homeserver.yaml (PostgreSQL is not published outside the compose network).
set -eu
psql -v ON_ERROR_STOP=1 --username postgres <<SQL
CREATE ROLE synapse LOGIN PASSWORD 'synapse';
CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE ROLE bot LOGIN PASSWORD '${BOT_DB_PASSWORD}';
CREATE DATABASE bot OWNER bot;
SQL
