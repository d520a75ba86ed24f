# NIXI: Intel iMac, the staging machine for darwin changes.
{ ... }:
{
  system.defaults.dock.orientation = "left";
}
