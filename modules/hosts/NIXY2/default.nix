# NIXY2: aarch64 NixOS box, the development environment's machine.
{ ... }:
{
  imports = [ ./hardware-configuration.nix ];

  services.tailscale.enable = true;
  virtualisation.docker.enable = true;
}
