# skillwarden decision policy (static, vetted; never generated from user input).
#
# data.skillwarden.policies: the namespace document compiled by skillwarden_operator.compiler
# data.skillwarden.bundle.revision: content hash of the bundle (same as the .manifest revision)
#
# Query: POST /v1/data/skillwarden/decision {"input": ...}. While no bundle is loaded the data is
# missing and `decision` is undefined: the sidecar denies (fail closed).
package skillwarden

# Always referenced by full path (never bound to a variable): OPA then reads only the entries a
# request needs from its store instead of materialising the whole document on every query.

rank := {"allow": 0, "require_approval": 1, "deny": 2}

request := object.get(input, "request", {})

identity := object.get(input, "identity", {})

workload := object.get(input, "workload", {})

req_skills := object.get(request, "skills", [])

req_tools := object.get(request, "tools", [])

req_model := object.get(request, "model", "")

prompt := object.get(request, "prompt_text", "")

# The sidecar always classifies the route; hand-written inputs without one mean a message.
operation := object.get(request, "operation", "messages.create")

skill_key(s) := sprintf("%s/%s", [object.get(s, "type", ""), object.get(s, "skill_id", "")])

# ---------------------------------------------------------------------------------------------
# Grants: subjects are looked up by key (group, user, service account), never scanned.

candidate_grants contains i if {
	some g in object.get(identity, "groups", [])
	some i in data.skillwarden.policies.grant_index.group[g]
}

candidate_grants contains i if {
	sub := object.get(identity, "sub", "")
	sub != ""
	some i in data.skillwarden.policies.grant_index.user[sub]
}

candidate_grants contains i if {
	email := object.get(identity, "email", "")
	email != ""
	some i in data.skillwarden.policies.grant_index.user[email]
}

# The pod's own service account (workload identity, always known to the sidecar).
candidate_grants contains i if {
	sa := object.get(workload, "service_account", "")
	sa != ""
	some i in data.skillwarden.policies.grant_index.serviceaccount[sa]
}

# A presented Kubernetes service-account token of this namespace.
candidate_grants contains i if {
	identity.kind == "serviceaccount"
	parts := split(identity.sub, ":")
	count(parts) == 4
	parts[0] == "system"
	parts[1] == "serviceaccount"
	parts[2] == data.skillwarden.policies.namespace
	some i in data.skillwarden.policies.grant_index.serviceaccount[parts[3]]
}

skill_listed(skills, s) if skills[skill_key(s)].any

skill_listed(skills, s) if skills[skill_key(s)].versions[object.get(s, "version", "latest")]

grant_covers_skills(grant) if {
	every s in req_skills {
		skill_listed(grant.skills, s)
	}
}

grant_covers_model(_) if req_model == ""

grant_covers_model(grant) if {
	some pattern in grant.models
	glob.match(pattern, null, req_model)
}

grant_covers_tools(grant) if {
	every t in req_tools {
		grant.tools[t]
	}
}

grant_covers_tokens(grant) if not grant.maxTokens

grant_covers_tokens(_) if not is_number(object.get(request, "max_tokens", null))

grant_covers_tokens(grant) if request.max_tokens <= grant.maxTokens

grant_covers_operation(grant) if grant.operations[operation]

granting contains i if {
	some i in candidate_grants
	grant := data.skillwarden.policies.grants[i]
	grant_covers_skills(grant)
	grant_covers_model(grant)
	grant_covers_tools(grant)
	grant_covers_tokens(grant)
	grant_covers_operation(grant)
}

granted if count(granting) > 0

# ---------------------------------------------------------------------------------------------
# Prompt patterns: which entries of the namespace's pattern table the prompt matches.

pattern_table := data.skillwarden.policies.prompt_patterns

sent_matches := object.get(request, "prompt_matches", {})

# The sidecar ran this very table (same fingerprint) over the prompt in one RE2 set pass: use its
# ids, the prompt text is not read at all.
matched_in := "sidecar" if {
	sent_matches.fingerprint == pattern_table.fingerprint
	is_array(sent_matches.ids)
} else := "policy-engine"

matched_patterns contains id if {
	matched_in == "sidecar"
	some id in sent_matches.ids
}

# No ids, or ids of another table (a sidecar that has not yet fetched this bundle's table):
# match here. Slower, never wrong.
matched_patterns contains format_int(i, 10) if {
	matched_in == "policy-engine"
	some i, pattern in pattern_table.patterns
	regex.match(pattern, prompt)
}

# ---------------------------------------------------------------------------------------------
# Rules: only those indexed under a key the request carries (plus the unindexed ones) are tested.

candidate_rules contains i if {
	some s in req_skills
	some i in data.skillwarden.policies.rule_index.skill[skill_key(s)]
}

candidate_rules contains i if {
	some t in req_tools
	some i in data.skillwarden.policies.rule_index.tool[t]
}

candidate_rules contains i if {
	req_model != ""
	some i in data.skillwarden.policies.rule_index.model[req_model]
}

# Model globs are filed under their literal prefix: look up every prefix of the request's model
# (bounded by the CRD's 128-character model names), only when some glob rule exists (a flag the
# compiler sets: counting the index would walk all of its keys on every decision).
candidate_rules contains i if {
	req_model != ""
	data.skillwarden.policies.rule_index_has_model_prefix
	some n in numbers.range(1, count(req_model))
	some i in data.skillwarden.policies.rule_index.model_prefix[substring(req_model, 0, n)]
}

candidate_rules contains i if {
	some id in matched_patterns
	some i in data.skillwarden.policies.rule_index.pattern[id]
}

candidate_rules contains i if some i in data.skillwarden.policies.rule_index.any

cond_prompt(when) if not when.promptPatterns

cond_prompt(when) if {
	some id in when.promptPatterns
	matched_patterns[id]
}

cond_skills(when) if not when.skills

cond_skills(when) if {
	some s in req_skills
	skill_listed(when.skills, s)
}

cond_tools(when) if not when.tools

cond_tools(when) if {
	some t in req_tools
	when.tools[t]
}

cond_models(when) if not when.models

cond_models(when) if {
	req_model != ""
	some pattern in when.models
	glob.match(pattern, null, req_model)
}

cond_tokens(when) if not is_number(object.get(when, "maxTokensAbove", null))

cond_tokens(when) if request.max_tokens > when.maxTokensAbove

cond_operations(when) if not when.operations

cond_operations(when) if when.operations[operation]

matching_rules contains i if {
	some i in candidate_rules
	when := data.skillwarden.policies.rules[i].when
	cond_skills(when)
	cond_tools(when)
	cond_models(when)
	cond_tokens(when)
	cond_operations(when)
	cond_prompt(when) # last: the only costly condition
}

# ---------------------------------------------------------------------------------------------
# Precedence: deny > require_approval > allow. No grant => the namespace's defaultAction.

base_action := "allow" if granted

else := data.skillwarden.policies.default_action

broken if count(data.skillwarden.policies.invalid) > 0

# Inputs of the wrong type would make conditions silently not match (a deny rule skipped, a token
# ceiling ignored): refuse them instead.
malformed contains "request.prompt_text is not a string" if not is_string(prompt)

malformed contains "request.max_tokens is not a number" if {
	tokens := object.get(request, "max_tokens", null)
	tokens != null
	not is_number(tokens)
}

malformed contains "request.prompt_matches.ids is not a list of strings" if {
	matched_in == "sidecar"
	some id in sent_matches.ids
	not is_string(id)
}

malformed contains "request.skills is not a list" if not is_array(req_skills)

malformed contains "request.tools is not a list" if not is_array(req_tools)

malformed contains "request.model is not a string" if not is_string(req_model)

refused if broken

refused if count(malformed) > 0

raw_rank := 2 if refused

else := max({rank[base_action]} | {rank[data.skillwarden.policies.rules[i].action] | some i in matching_rules})

actions := {"allow", "require_approval", "deny"}

raw_action := a if {
	some a in actions
	rank[a] == raw_rank
}

# The rule that decided: the first (policy name, rule order) matching rule of the winning rank.
deciding_rule := data.skillwarden.policies.rules[min({i |
	some i in matching_rules
	rank[data.skillwarden.policies.rules[i].action] == raw_rank
})]

first_grant := data.skillwarden.policies.grants[min(granting)]

approved if {
	raw_action == "require_approval"
	input.approval.state == "Approved"
}

action := "allow" if approved

else := raw_action

policy := null if refused

else := deciding_rule.policy if deciding_rule

else := first_grant.policy if granted

else := null

rule := null if refused

else := deciding_rule.name if deciding_rule

else := null

message := "the namespace's SkillPolicies are invalid; every request is denied until they are fixed" if broken

else := sprintf("malformed decision input: %s", [concat("; ", sort(malformed))]) if count(malformed) > 0

else := deciding_rule.message if deciding_rule

else := sprintf("granted by %s subject %s", [first_grant.policy, first_grant.subject]) if granted

else := sprintf("no SkillPolicy subject grants this request; default action %s", [data.skillwarden.policies.default_action])

reasons_broken contains sprintf("policy %s is invalid: %s", [entry.policy, concat("; ", entry.errors)]) if {
	some entry in data.skillwarden.policies.invalid
}

reasons_grant contains sprintf("granted by %s subject %s", [g.policy, g.subject]) if {
	some i in granting
	g := data.skillwarden.policies.grants[i]
}

reasons_grant contains sprintf("no subject grants this request (skills, model, tools and max_tokens must all be within one grant); default action %s", [data.skillwarden.policies.default_action]) if {
	not granted
}

reasons_rules contains sprintf("rule %s/%s: %s: %s", [r.policy, r.name, r.action, r.message]) if {
	some i in matching_rules
	r := data.skillwarden.policies.rules[i]
}

reasons_approval contains sprintf("approved by SkillApproval %s", [input.approval.id]) if approved

reasons_malformed contains sprintf("malformed decision input: %s", [m]) if some m in malformed

reasons := sort(((((reasons_broken | reasons_malformed) | reasons_grant) | reasons_rules) | reasons_approval))

approval_policy := deciding_rule.policy if deciding_rule

else := data.skillwarden.policies.default_policy

approval_settings := object.get(data.skillwarden.policies.approvals, approval_policy, {}) if action == "require_approval"

else := {}

decision := {
	"action": action,
	"reasons": reasons,
	"policy": policy,
	"rule": rule,
	"message": message,
	"masking": data.skillwarden.policies.masking,
	"recording": object.remove(data.skillwarden.policies.recording, ["policy"]),
	"approval": approval_settings,
	"bundle_revision": data.skillwarden.bundle.revision,
	# Where the prompt patterns were matched: "sidecar" means the decision did not read the prompt
	# text, so the sidecar may reuse it for requests that differ only in their text.
	"prompt_patterns": {"fingerprint": pattern_table.fingerprint, "matched_in": matched_in},
}
