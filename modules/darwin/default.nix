# nix-darwin hosts (NIXY, NIXI).
{ pkgs, hostFacts, ... }:
{
  # nix-darwin refuses to activate without a state version; bump it only after reading its release notes.
  system.stateVersion = 5;
  system.primaryUser = builtins.head hostFacts.users;

  users.users = builtins.listToAttrs (map
    (user: {
      name = user;
      value = {
        home = "/Users/${user}";
        shell = pkgs.zsh;
      };
    })
    hostFacts.users);

  security.pam.services.sudo_local.touchIdAuth = true;

  system.defaults = {
    dock.autohide = true;
    finder.AppleShowAllExtensions = true;
    NSGlobalDomain.KeyRepeat = 2;
  };

  homebrew = {
    enable = true;
    onActivation.cleanup = "zap";
    casks = [ "firefox" "wezterm" ];
  };
}
