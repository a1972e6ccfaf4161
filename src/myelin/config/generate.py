"""``myelin generate-config``: a commented homeserver.yaml and a fresh signing key."""

from __future__ import annotations

import os
import secrets

from signedjson.key import generate_signing_key, write_signing_keys

TEMPLATE = """\
# Myelin homeserver configuration for {server_name}.
# Keys follow Synapse's homeserver.yaml where they exist.

# The domain in your users' IDs (@alice:{server_name}). Cannot change later.
server_name: "{server_name}"

# The URL clients use to reach this server (behind your reverse proxy).
public_baseurl: "http://localhost:8008/"

# Where the server listens. `resources` says what each listener serves:
# client, federation, keys, media, replication, metrics, health.
listeners:
  - port: 8008
    bind_addresses: ['127.0.0.1', '::1']
    type: http
    x_forwarded: true
    tls: false
    resources:
      - names: [client, federation]
        compress: false

# SQLite for a small server. For a large one, or workers, use PostgreSQL:
#   database:
#     name: psycopg2
#     args: {{user: myelin, password: secret, database: myelin, host: localhost,
#             cp_min: 5, cp_max: 10}}
database:
  name: sqlite3
  args:
    database: "{data_dir}/homeserver.db"

# The ed25519 key this server signs events and federation requests with.
signing_key_path: "{data_dir}/{server_name_file}.signing.key"

# Open registration lets anyone create an account on this server.
enable_registration: false
enable_registration_without_verification: false

# Used by `myelin register-user` (and Synapse's admin tools) to create accounts.
registration_shared_secret: "{shared_secret}"

# Rooms created without an explicit version use this one.
default_room_version: "12"

# The media repository: where uploads go, and how large they may be.
media_store_path: "{data_dir}/media_store"
max_upload_size: 50M
# Media uploaded while this is on is served only to signed-in users
# (/_matrix/client/v1/media), not by the old unauthenticated downloads.
enable_authenticated_media: true
# URL previews fetch web pages on behalf of users; private, loopback and
# link-local addresses are never fetched (url_preview_ip_range_blacklist).
url_preview_enabled: false

# Federation. Other servers verify your signatures with keys they fetch
# from you, or from notaries; keys you cannot get from a server itself are
# asked of these (matrix.org, as Synapse does; [] for none).
trusted_key_servers:
  - server_name: "matrix.org"
# Outbound federation never connects to private, loopback or link-local
# addresses (federation_ip_range_blocklist), and checks certificates
# (federation_verify_certificates, plus federation_custom_ca_list).
# Only these servers, if set:
# federation_domain_whitelist: [example.com]

# Rate limits (per_second, burst_count); these are the defaults.
rc_message:
  per_second: 0.2
  burst_count: 10
rc_registration:
  per_second: 0.17
  burst_count: 3
rc_login:
  address: {{per_second: 0.003, burst_count: 5}}
  account: {{per_second: 0.003, burst_count: 5}}
  failed_attempts: {{per_second: 0.17, burst_count: 3}}

# A Python logging dictConfig YAML file; without one, logs go to stderr.
# log_config: "{data_dir}/log.config"
"""


def generate_config(server_name: str, config_path: str, data_dir: str | None,
                    report_stats: bool = False) -> str:
    if os.path.exists(config_path):
        raise FileExistsError(f"{config_path} already exists; not overwriting it")
    config_dir = os.path.dirname(os.path.abspath(config_path))
    data_dir = os.path.abspath(data_dir) if data_dir else config_dir
    os.makedirs(config_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)
    server_name_file = server_name.replace(":", "_")
    key_path = os.path.join(data_dir, f"{server_name_file}.signing.key")
    if not os.path.exists(key_path):
        with open(key_path, "w", encoding="utf-8") as f:
            write_signing_keys(f, [generate_signing_key("a_" + secrets.token_hex(2))])
        os.chmod(key_path, 0o600)
    text = TEMPLATE.format(server_name=server_name, data_dir=data_dir,
                           server_name_file=server_name_file,
                           shared_secret=secrets.token_urlsafe(32))
    # "x" mode: never overwrite, even if the file appeared meanwhile.
    with open(config_path, "x", encoding="utf-8") as f:
        f.write(text)
    os.chmod(config_path, 0o600)
    return config_path
