<#
.SYNOPSIS
  tsunagi screen-lock reporter for Windows terminals.

.DESCRIPTION
  Reads the settings the network's rule is about (a password lock or automatic logoff after at
  most 5 minutes idle) and posts them, as reg.exe prints them, to the facility's tsunagi
  appliance, which judges them:
    HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System  InactivityTimeoutSecs
    HKCU\Software\Policies\Microsoft\Windows\Control Panel\Desktop   ScreenSaveActive,
                                                                     ScreenSaverIsSecure,
                                                                     ScreenSaveTimeOut

  Enrol once, as an administrator, with a code from `tsunagi-edge terminal code`:
    powershell -ExecutionPolicy Bypass -File screenlock.ps1 -Action enrol -Url https://box-1.tsunagi.internal -Code <code>
  This also registers a scheduled task that reports at every logon and every 15 minutes, as the
  logged-on user (the screensaver policy is per user).

  The network's root must be in the machine's trusted root store (the trust page of the
  appliance explains how).
#>
param(
    [Parameter(Mandatory = $true)][ValidateSet('enrol', 'report')][string]$Action,
    [string]$Url,
    [string]$Code
)
$ErrorActionPreference = 'Stop'
$dir = Join-Path $env:ProgramData 'tsunagi'
$conf = Join-Path $dir 'reporter.json'

function Get-RegText([string]$key) {
    $out = & reg.exe query $key 2>$null
    if ($LASTEXITCODE -ne 0) { return '' }
    return ($out -join "`r`n")
}

if ($Action -eq 'enrol') {
    if (-not $Url -or -not $Code) { throw 'enrol needs -Url https://<appliance> and -Code <code>' }
    $Url = $Url.TrimEnd('/')
    $answer = Invoke-RestMethod -Method Post -Uri "$Url/_tsunagi/posture" -ContentType 'application/json' -Body (@{ code = $Code } | ConvertTo-Json)
    New-Item -ItemType Directory -Force -Path $dir | Out-Null
    # The token only lets this terminal post its own screen-lock report: users may read it,
    # only administrators may change it.
    & icacls.exe $dir /inheritance:r /grant:r 'SYSTEM:(OI)(CI)F' 'Administrators:(OI)(CI)F' 'Users:(OI)(CI)RX' | Out-Null
    @{ url = $Url; token = $answer.token } | ConvertTo-Json | Set-Content -Encoding UTF8 -Path $conf
    $script = Join-Path $dir 'screenlock.ps1'
    Copy-Item -Force -Path $PSCommandPath -Destination $script
    $act = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument "-NoProfile -WindowStyle Hidden -ExecutionPolicy Bypass -File `"$script`" -Action report"
    $logon = New-ScheduledTaskTrigger -AtLogOn
    $every = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 15)
    $who = New-ScheduledTaskPrincipal -GroupId 'S-1-5-32-545' -RunLevel Limited
    Register-ScheduledTask -Force -TaskName 'tsunagi screen-lock report' -Action $act -Trigger @($logon, $every) -Principal $who | Out-Null
    Write-Output "enrolled as $($answer.terminal); reporting every 15 minutes"
    exit 0
}

$c = Get-Content -Raw -Path $conf | ConvertFrom-Json
$body = @{
    os      = 'windows'
    host    = $env:COMPUTERNAME
    machine = Get-RegText 'HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System'
    user    = Get-RegText 'HKCU\Software\Policies\Microsoft\Windows\Control Panel\Desktop'
} | ConvertTo-Json
$answer = Invoke-RestMethod -Method Post -Uri "$($c.url)/_tsunagi/posture" -ContentType 'application/json; charset=utf-8' -Headers @{ Authorization = "Bearer $($c.token)" } -Body ([System.Text.Encoding]::UTF8.GetBytes($body))
Write-Output ($answer | ConvertTo-Json)
