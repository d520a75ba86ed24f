# NixOS hosts (NIXSTATION64, NIXY2).
{ config, pkgs, hostFacts, ... }:
{
  system.stateVersion = "25.05";

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  users.mutableUsers = false;
  users.users = builtins.listToAttrs (map
    (user: {
      name = user;
      value = {
        isNormalUser = true;
        shell = pkgs.zsh;
        extraGroups = if user == "alex" then [ "wheel" "networkmanager" ] else [ "networkmanager" ];
        hashedPasswordFile = config.sops.secrets."users/${user}/password_hash".path;
      };
    })
    hostFacts.users);

  networking.networkmanager.enable = true;
  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };

  # A deploy's health check waits for this to report "running".
  systemd.services.NetworkManager-wait-online.enable = false;
}
