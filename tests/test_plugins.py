"""The plugin contract: registration through entry points, backend selection, loud failures."""

from __future__ import annotations

import types

import pytest

import burla
from burla_core import config, plugins
from burla_core.hookspecs import ProvisionerRecord, hookimpl
from burla_core.errors import PluginError, UnknownBackend


def test_local_backend_is_registered_through_the_entry_point_group():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="burla")}
    assert names.get("local") == "burla_backend_local.plugin", names
    assert "local" in plugins.installed_backends()


def test_unknown_backend_lists_installed_backends():
    with pytest.raises(UnknownBackend) as caught:
        burla.remote_parallel_map(abs, [1], backend="no-such-backend")
    assert "no-such-backend" in str(caught.value)
    assert "local" in str(caught.value), f"the message should list installed backends: {caught.value}"


def test_selection_order_keyword_then_env_then_config_then_local(monkeypatch):
    assert config.selected_backend(None) == "local"
    config.write_config({"backend": "from-config"})
    assert config.selected_backend(None) == "from-config"
    monkeypatch.setenv("BURLA_BACKEND", "from-env")
    assert config.selected_backend(None) == "from-env"
    assert config.selected_backend("from-keyword") == "from-keyword"


def test_backend_from_config_file_is_used_by_remote_parallel_map():
    config.write_config({"backend": "configured-but-missing"})
    with pytest.raises(UnknownBackend, match="configured-but-missing"):
        burla.remote_parallel_map(abs, [1])


def test_broken_config_file_fails_with_its_path(isolated_burla_files):
    config.config_path().write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        config.selected_backend(None)


def test_misspelt_hook_fails_loudly():
    plugin = types.SimpleNamespace()

    @hookimpl
    def burla_register_provisioner(register):  # missing the final "s"
        pass

    plugin.burla_register_provisioner = burla_register_provisioner
    with pytest.raises(PluginError, match="burla_register_provisioner"):
        plugins.load_registry(extra_plugins=(plugin,))


def test_duplicate_backend_name_is_rejected():
    class Duplicate:
        @hookimpl
        def burla_register_provisioners(self, register):
            register(ProvisionerRecord(name="local", factory=dict, transport="local"))

    with pytest.raises(PluginError, match="'local'"):
        plugins.load_registry(extra_plugins=(Duplicate(),))


def test_backend_missing_its_transport_is_a_plugin_error(monkeypatch):
    class HalfBackend:
        @hookimpl
        def burla_register_provisioners(self, register):
            register(ProvisionerRecord(name="half", factory=dict, transport="carrier-pigeon"))

    monkeypatch.setattr(plugins, "_registry", plugins.load_registry(extra_plugins=(HalfBackend(),)))
    with pytest.raises(PluginError, match="carrier-pigeon"):
        plugins.resolve_backend("half")


def test_a_third_party_backend_reusing_the_local_transport_runs_jobs(monkeypatch):
    """A plugin registered at run time is a full backend: here, the local machine capped at one
    slot, proving a provisioner alone is enough to make a backend."""
    from burla_backend_local.provisioner import LocalProvisioner

    class OneSlot(LocalProvisioner):
        def eligible_nodes(self, request):
            nodes = super().eligible_nodes(request)
            nodes[0].slots = 1
            return nodes

    class OneSlotPlugin:
        @hookimpl
        def burla_register_provisioners(self, register):
            register(ProvisionerRecord(name="one-slot", factory=OneSlot, transport="local"))

    monkeypatch.setattr(plugins, "_registry", plugins.load_registry(extra_plugins=(OneSlotPlugin(),)))
    assert burla.remote_parallel_map(lambda x: x + 1, [1, 2, 3], backend="one-slot", spinner=False) == [2, 3, 4]


def test_an_entry_point_whose_module_is_missing_is_a_plugin_error_saying_what_to_do(tmp_path, monkeypatch):
    import sys

    from burla_core import plugins
    from burla_core.errors import PluginError

    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[burla]\nbroken = module_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.path_importer_cache.clear()
    with pytest.raises(PluginError, match="module_that_is_not_there") as caught:
        plugins.load_registry()
    assert "reinstall" in str(caught.value)
