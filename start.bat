@echo off
rem Ki2API, one command (Windows): double-click, or `start.bat portable` and so on.
rem The work is done by start.ps1 (same folder); see it for the settings.
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0start.ps1" %*
set "KI2API_EXIT=%ERRORLEVEL%"
rem Keep a double-clicked window open on a failure, so its message can be read.
if not "%KI2API_EXIT%"=="0" if "%~1"=="" pause
exit /b %KI2API_EXIT%
