# NIXSTATION64: x86_64 NixOS workstation.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  services.xserver.enable = true;
  services.displayManager.gdm.enable = true;
  services.desktopManager.gnome.enable = true;
  hardware.graphics.enable = true;

  virtualisation.podman.enable = true;
  environment.systemPackages = [ pkgs.firefox ];
}
