# NIXEDUP: Android phone with nix-on-droid. Planned: `enabled = false` in the inventory keeps it out of builds,
# deploys and secrets. nix-on-droid switches on the device itself (`nix-on-droid switch --flake .#NIXEDUP`).
{ pkgs, ... }:
{
  system.stateVersion = "24.05";
  environment.packages = with pkgs; [ git openssh ripgrep ];
  home-manager.config = import ../../home/alex.nix;
}
