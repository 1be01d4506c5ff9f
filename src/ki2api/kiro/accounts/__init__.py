"""The accounts: the pool a gateway serves from, and everything it knows of each account.

- `policy`: pure rules: which account serves, whose fault a failure is, what it does.
- `pool`: `AccountPool`, live state (in flight, sticky), health mirrored from the store.
- `logins`: the login object of each account (by source), and `accounts refresh`.
- `registry`: the store's accounts plus the logins the gateway discovers itself.
- `importers`: token files, directories and kiro-cli's database -> token JSON.
- `quota`: `getUsageLimits` -> `Quota` (parser and call).
- `catalogue`: `ListAvailableModels` per account, the live catalogue.
- `upkeep`: background quota polling and a second chance for revoked logins.
"""
