# Ki2API, one command (Windows PowerShell 5.1 or PowerShell 7): make the venv, install the locked
# dependencies, start. start.bat runs this script (a double-click in Explorer works).
#   .\start.ps1              serve with your Kiro login, or the demo when none is found
#   .\start.ps1 portable     any other ki2api command, from the same venv (.\start.ps1 --help)
# Settings: $env:VENV (default .venv), $env:PYTHON (default: `py -3`, then `python`), and
# everything in .env / the environment as for `ki2api serve`. Linux, macOS: start.sh.
$ErrorActionPreference = 'Stop'
Set-Location -LiteralPath $PSScriptRoot
$venv = if ($env:VENV) { $env:VENV } else { '.venv' }
if (-not [System.IO.Path]::IsPathRooted($venv)) { $venv = Join-Path $PSScriptRoot $venv }
$python = Join-Path $venv 'Scripts\python.exe'

function Test-Python([string]$exe, [string[]]$pre) {
    # True when `exe pre...` is Python 3.11 or newer. Windows' python.exe stub (it offers the
    # Microsoft Store) fails this. Native stderr must not stop the script (Windows PowerShell).
    $ErrorActionPreference = 'Continue'
    if (-not (Get-Command $exe -ErrorAction SilentlyContinue)) { return $false }
    & $exe @pre -c 'import sys; sys.exit(sys.version_info < (3, 11))' *> $null
    return $LASTEXITCODE -eq 0
}

if (-not (Test-Path -LiteralPath $python)) {
    $candidates = @()
    if ($env:PYTHON) { $candidates += [pscustomobject]@{ Exe = $env:PYTHON; Pre = @() } }
    $candidates += [pscustomobject]@{ Exe = 'py'; Pre = @('-3') }
    $candidates += [pscustomobject]@{ Exe = 'python'; Pre = @() }
    $candidates += [pscustomobject]@{ Exe = 'python3'; Pre = @() }
    $found = $null
    foreach ($c in $candidates) {
        if (Test-Python $c.Exe $c.Pre) { $found = $c; break }
    }
    if (-not $found) {
        [Console]::Error.WriteLine('start.ps1: Python 3.11 or newer is needed: install it from ' +
            'https://www.python.org/downloads/ (tick "Add python.exe to PATH"), or set $env:PYTHON.')
        exit 1
    }
    $pre = $found.Pre
    & $found.Exe @pre -m venv $venv
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

# Install (again) when the lock or the project changed since the last install.
$stamp = Join-Path $venv '.start-installed'
$stale = -not (Test-Path -LiteralPath $stamp)
if (-not $stale) {
    $installed = (Get-Item -LiteralPath $stamp).LastWriteTime
    $newer = @('requirements.lock', 'pyproject.toml' | Where-Object {
            (Get-Item -LiteralPath $_).LastWriteTime -gt $installed })
    $stale = $newer.Count -gt 0
}
if ($stale) {
    Write-Host "start.ps1: installing Ki2API and its locked dependencies into $venv ..."
    & $python -m pip --disable-pip-version-check install --quiet -c requirements.lock setuptools wheel
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    & $python -m pip --disable-pip-version-check install --quiet -c requirements.lock --no-build-isolation -e .
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    Set-Content -LiteralPath $stamp -Value (Get-Date -Format o)
}

$ki2api = Join-Path $venv 'Scripts\ki2api.exe'
if ($args.Count -eq 0) { & $ki2api start } else { & $ki2api @args }
exit $LASTEXITCODE
