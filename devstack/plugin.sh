#!/bin/bash
# devstack plugin: installs masakarimonitors_iim and runs masakari-iim on
# each compute node (n-cpu), as the stack user (nova's devstack setup puts
# it in the libvirt group), reading the masakari-monitors config file.
#
# Phases:  stack pre-install   refuse a second introspective monitor
#          stack install       setup_develop
#          stack post-config   state directory, masakarimonitors.conf
#          stack extra         start the masakari-iim service
#          unstack             stop it
#          clean               remove its state (the journal)

# Both monitors would notify Masakari for the same failed guest.
function check_single_introspective_monitor {
    if is_service_enabled masakari-monitors && \
            is_service_enabled masakari-introspectiveinstancemonitor; then
        die $LINENO "masakari-iim and masakari-monitors' introspective" \
            "monitor would both notify for the same failures; add" \
            "'disable_service masakari-introspectiveinstancemonitor' to local.conf"
    fi
}

function install_masakari_iim {
    setup_develop "$MASAKARI_IIM_DIR"
}

function configure_masakari_iim {
    local conf=$MASAKARI_IIM_CONF
    sudo install -d -o "$STACK_USER" "$(dirname "$conf")" "$MASAKARI_IIM_STATE_DIR"
    [[ -f "$conf" ]] || touch "$conf"
    iniset "$conf" DEFAULT hostname "$MASAKARI_IIM_HOSTNAME"
    iniset "$conf" libvirt connection_uri "qemu:///system"
    iniset "$conf" introspectiveinstancemonitor journal_path "$MASAKARI_IIM_JOURNAL"
    iniset "$conf" introspectiveinstancemonitor notifier "$MASAKARI_IIM_NOTIFIER"
    iniset "$conf" api auth_type password
    iniset "$conf" api auth_url "$KEYSTONE_SERVICE_URI"
    iniset "$conf" api username "$MASAKARI_IIM_API_USER"
    iniset "$conf" api password "$SERVICE_PASSWORD"
    iniset "$conf" api project_name "$SERVICE_PROJECT_NAME"
    iniset "$conf" api user_domain_id default
    iniset "$conf" api project_domain_id default
    iniset "$conf" api region "$REGION_NAME"
}

function start_masakari_iim {
    check_single_introspective_monitor
    # masakari's plugin re-creates this file in its own post-config phase:
    # listed after this plugin, it has wiped what configure wrote.
    if ! ini_has_option "$MASAKARI_IIM_CONF" introspectiveinstancemonitor journal_path; then
        die $LINENO "$MASAKARI_IIM_CONF lost masakari-iim's settings after" \
            "they were written; in local.conf, put 'enable_plugin masakari'" \
            "before 'enable_plugin masakarimonitors-iim'"
    fi
    run_process masakari-iim "$MASAKARI_IIM_BIN_DIR/masakari-iim --config-file $MASAKARI_IIM_CONF"
}

function stop_masakari_iim {
    stop_process masakari-iim
}

function cleanup_masakari_iim {
    # Never "rm -rf /": the directory must be set and not the root.
    if [[ -n "$MASAKARI_IIM_STATE_DIR" && "$MASAKARI_IIM_STATE_DIR" != "/" ]]; then
        sudo rm -rf "$MASAKARI_IIM_STATE_DIR"
    fi
}

if is_service_enabled masakari-iim; then
    if ! is_service_enabled n-cpu; then
        if [[ "$1" == "stack" && "${2:-}" == "install" ]]; then
            echo_summary "masakari-iim: n-cpu is not enabled on this node, no guests to watch: skipped"
        fi
    elif [[ "$1" == "stack" && "${2:-}" == "pre-install" ]]; then
        check_single_introspective_monitor
    elif [[ "$1" == "stack" && "${2:-}" == "install" ]]; then
        echo_summary "Installing masakari-iim"
        install_masakari_iim
    elif [[ "$1" == "stack" && "${2:-}" == "post-config" ]]; then
        echo_summary "Configuring masakari-iim"
        configure_masakari_iim
    elif [[ "$1" == "stack" && "${2:-}" == "extra" ]]; then
        echo_summary "Starting masakari-iim"
        start_masakari_iim
    elif [[ "$1" == "unstack" ]]; then
        stop_masakari_iim
    elif [[ "$1" == "clean" ]]; then
        cleanup_masakari_iim
    fi
fi
