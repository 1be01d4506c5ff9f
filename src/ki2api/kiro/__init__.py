"""Everything that speaks Kiro: a core `Conversation` in, core stream events out.

Four rooms, each a subpackage with its own map, plus the modules that tie them together. The
layers, highest first; a module imports only from its own layer or lower ones (enforced by the
import contracts in `.importlinter`):

1. `backend` (`KiroBackend.stream`: build, send, read, fail over), then `mcp` (Kiro's `/mcp`
   web search) and `failover` (one request's attempts across the pool), independent of each other.
2. `accounts/`: the pool of accounts: policy, live state, registry, importers, quota, models
   catalogue, upkeep, and the login object of each account; beside it `fresh_token` (one call
   with the account's token, refreshed and retried once when Kiro calls it invalid).
3. `login/`: one account's login: credentials, refresh, the token file, where tokens live,
   discovery, the profile ARN.
4. `request/` (a `Conversation` -> the `generateAssistantResponse` body) and `stream/` (event-stream
   bytes -> core events); independent of each other.
5. `classify` (upstream failures -> `GatewayError`), `endpoint` (hosts, regions, headers, machine
   id) and `transport` (the chat call's HTTP client and its seam).
6. `client_identity`: the client versions the headers name (one place, updatable by a file),
   and `http11` (the direct chat calls' small HTTP/1.1 client), independent of each other.
"""
