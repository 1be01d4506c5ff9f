"""The web console (`/ui`): the operator's view of the gateway, on when ADMIN_KEY is set.

console_session.py  the signed session cookie, its CSRF token, the login throttle (pure)
console_pages.py    `/`, `/ui`, `/ui/{page}` (the page, or the "console is off" page) and
                    `/ui/static/{file}` (the assets in `static/`, shipped as package data)
console_api.py      the JSON API under `/ui/api/` (sign-in, overview, requests, settings, keys)
console_accounts.py the account routes of the API (list, add from a pasted token JSON,
                    disable / enable / refresh)
console_views.py    pure shaping: usage rows -> time series with p50/p95, account and key views,
                    the settings in force with secrets hidden
static/             index.html, console.js, console.css: no framework, no build step
"""
