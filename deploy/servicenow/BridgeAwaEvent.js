/*
 * Script Include "BridgeAwaEvent" (Application: Global, Accessible from: All application
 * scopes, Client callable: false).
 *
 * Builds the one JSON body the bridge's receiver accepts (POST /servicenow/events) and
 * hands it to the provider subflow. Used by the two External Event Definitions (work item
 * created, transferred) and by the two after-update Business Rules (the state changes the
 * documented events do not send). Rhino / ES5: no let, const, arrow functions or templates.
 */
var BridgeAwaEvent = Class.create();

// What the bridge's polls read (bridge/adapters/servicenow/polling.py WORK_ITEM_FIELDS /
// INTERACTION_FIELDS): a pushed record must let the bridge decide exactly as a polled one.
BridgeAwaEvent.WORK_ITEM_FIELDS = [
    'number', 'state', 'active', 'document_table', 'document_id', 'queue', 'assigned_to',
    'cancel_reason', 'rejected', 'timed_out', 'reject_reason', 'offered_on', 'offer_count',
    'external_segment_id', 'previous_work_item'
];
BridgeAwaEvent.INTERACTION_FIELDS = [
    'state', 'active', 'queue', 'assigned_to', 'correlation_id', 'closed_at'
];
// Every record also carries its key and version: (sys_id, sys_mod_count) is the event key.
BridgeAwaEvent.SYSTEM_FIELDS = ['sys_id', 'sys_mod_count', 'sys_updated_on'];

// The provider subflow (copied from "Template - AWA Send Event") and its payload input.
BridgeAwaEvent.SUBFLOW_PROPERTY = 'bridge.awa.subflow';
BridgeAwaEvent.SUBFLOW_DEFAULT = 'global.bridge_awa_send_event';
BridgeAwaEvent.SUBFLOW_INPUT = 'payload';

BridgeAwaEvent.prototype = {
    initialize: function() {},

    fieldsOf: function(table) {
        var fields = table == 'interaction' ?
            BridgeAwaEvent.INTERACTION_FIELDS : BridgeAwaEvent.WORK_ITEM_FIELDS;
        return BridgeAwaEvent.SYSTEM_FIELDS.concat(fields);
    },

    // A field as the Table API returns it with sysparm_display_value=false: the stored
    // value, '' when empty, booleans as 'true' / 'false' (getValue gives '1' / '0').
    valueOf: function(gr, name) {
        var element = gr.getElement(name);
        if (element == null)
            return '';
        var value = gr.getValue(name);
        if (element.getED().getInternalType() == 'boolean')
            return (value == '1' || value == 'true') ? 'true' : 'false';
        return value == null ? '' : String(value);
    },

    // The request body (a string, as an External Event Definition must return).
    payload: function(eventName, gr) {
        var table = gr.getTableName();
        var fields = this.fieldsOf(table);
        var record = {};
        for (var i = 0; i < fields.length; i++)
            record[fields[i]] = this.valueOf(gr, fields[i]);
        var now = new GlideDateTime();
        var millis = String(1000 + now.getNumericValue() % 1000).substring(1);
        return JSON.stringify({
            event: eventName,
            table: table,
            sys_id: record.sys_id,
            sys_mod_count: parseInt(record.sys_mod_count, 10) || 0,
            sys_updated_on: record.sys_updated_on,
            record: record,
            instance: gs.getProperty('instance_name'),
            sent_at: now.getValue() + '.' + millis
        });
    },

    // True when this update changed a field the bridge reads (the Business Rules' condition).
    changed: function(current, previous) {
        var fields = this.fieldsOf(current.getTableName());
        for (var i = BridgeAwaEvent.SYSTEM_FIELDS.length; i < fields.length; i++) {
            if (current.getValue(fields[i]) != previous.getValue(fields[i]))
                return true;
        }
        return false;
    },

    // Post through the provider subflow, in the background: a slow or failing bridge must
    // never hold up or roll back the agent's update (the sweeper catches up what is lost).
    send: function(eventName, gr) {
        var inputs = {};
        inputs[BridgeAwaEvent.SUBFLOW_INPUT] = this.payload(eventName, gr);
        var subflow = gs.getProperty(BridgeAwaEvent.SUBFLOW_PROPERTY, BridgeAwaEvent.SUBFLOW_DEFAULT);
        sn_fd.FlowAPI.getRunner().subflow(subflow).inBackground().withInputs(inputs).run();
    },

    type: 'BridgeAwaEvent'
};
