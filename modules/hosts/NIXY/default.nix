# NIXY: Apple silicon MacBook, the primary machine.
{ pkgs, ... }:
{
  homebrew.casks = [ "utm" ];
  environment.systemPackages = [ pkgs.nixos-rebuild ];
}
